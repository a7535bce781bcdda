//! The JSON-RPC methods: parameter parsing, the questions to the exec shard, and the answers
//! built as `alloy-rpc-types-eth` types (so that Ethereum clients deserialize them).
//!
//! # How corecell's facts fill Ethereum's fields
//!
//! - **Block header**: `hash` is corecell's block hash (keccak-256 of its header layout, not
//!   of an RLP header); `parentHash`, `stateRoot`, `transactionsRoot` (corecell's
//!   transactions root, see `types::chain::transactions_root`), `mixHash` (the randao mix),
//!   `number`, `timestamp` (seconds; corecell keeps milliseconds) come from the header;
//!   `miner` is the proposer's node id (zero for block 0 or an unknown proposer);
//!   `baseFeePerGas` is the fixed [`BASE_FEE_WEI`]; `gasLimit` the block gas limit
//!   ([`DEFAULT_BLOCK_GAS_LIMIT`]); `gasUsed` from the execution; `receiptsRoot` and
//!   `logsBloom` are zero (no receipts trie, transfers log nothing); `difficulty` and `nonce`
//!   zero; no uncles, no withdrawals.
//! - **Transactions**: the signed envelope as sent, its recovered sender, block hash, number,
//!   index, and the effective gas price at the base fee.
//! - **Receipts**: status 1 (a failing transfer invalidates its block), gas used and
//!   cumulative gas from the execution, no logs, the type of the transaction.
//! - `eth_gasPrice` is [`BASE_FEE_WEI`]; `eth_maxPriorityFeePerGas` 0 (every fee is burned);
//!   `eth_feeHistory` gives the base fee, gas used ratio and, per requested percentile, the
//!   effective priority fee (geth's gas-weighted rule) of each kept block (at most
//!   [`MAX_FEE_HISTORY_BLOCKS`] blocks and [`MAX_REWARD_PERCENTILES`] percentiles).
//! - `eth_estimateGas` answers 21000 for a plain transfer (a `to`, no call data); a contract
//!   creation or call is an error: this chain runs transfers only.
//! - `eth_syncing` is `false` unless the highest height known (the bridge's `highest_known`)
//!   is above the executed head.
//! - `net_version` is the chain id in decimal.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use alloy_consensus::transaction::Recovered;
use alloy_consensus::{
    Eip658Value, Receipt as EthReceipt, ReceiptEnvelope, ReceiptWithBloom, Transaction as _,
    TxEnvelope,
};
use alloy_eips::eip2718::{Decodable2718, Typed2718};
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, Bloom, Bytes, B256, B64, U256, U64};
use alloy_rpc_types_eth::{
    Block, BlockTransactions, FeeHistory, Header as RpcHeader, Log, SyncInfo, SyncStatus,
    Transaction as RpcTransaction, TransactionReceipt,
};
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde::Serialize;

use super::{ChainInfo, RateLimiter, RpcConfig, CLIENT_VERSION};
use crate::config::genesis::ExecutionMode;
use crate::crypto::election::Committee;
use crate::exec::chain_index::IndexedBlock;
use crate::exec::mempool::{Refusal, DEFAULT_BLOCK_GAS_LIMIT};
use crate::exec::queries::{
    AccountInfo, BlockAt, HeadInfo, RpcAnswer, RpcBridge, RpcQuery, RpcRequest, StateAt, TxFound,
};
use crate::exec::state::TRANSFER_GAS;
use crate::exec::transfer::BASE_FEE_WEI;
use crate::types::MAX_TX_BYTES;
use crate::types::{signers, BlockHeader, Height};

/// Most blocks one `eth_feeHistory` covers (geth's limit).
pub const MAX_FEE_HISTORY_BLOCKS: u64 = 1024;
/// Most reward percentiles one `eth_feeHistory` asks for.
pub const MAX_REWARD_PERCENTILES: usize = 100;
/// How long a call waits for the exec shard's answer (it answers in microseconds unless it
/// is stopped or stuck; then the call fails instead of hanging).
pub const EXEC_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// JSON-RPC error codes.
pub mod code {
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i32 = -32602;
    /// Internal error.
    pub const INTERNAL: i32 = -32603;
    /// Server error (geth's code for refused transactions and unavailable state).
    pub const SERVER: i32 = -32000;
    /// Limit exceeded (EIP-1474).
    pub const LIMIT_EXCEEDED: i32 = -32005;
}

/// A method's result.
pub type RpcResult<T> = Result<T, ErrorObjectOwned>;

fn error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObject::owned(code, message.into(), None::<()>)
}

/// The -32000 answer.
pub fn server_error(message: impl Into<String>) -> ErrorObjectOwned {
    error(code::SERVER, message)
}

/// The -32602 answer.
pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    error(code::INVALID_PARAMS, message)
}

/// The answer to a refused transaction: -32000, geth's message, the details as `data`.
pub fn refusal_error(refusal: &Refusal) -> ErrorObjectOwned {
    ErrorObject::owned(
        code::SERVER,
        refusal.eth_message(),
        Some(refusal.to_string()),
    )
}

fn raw_chain_error() -> ErrorObjectOwned {
    server_error("not available on a raw chain: its transactions are opaque, it has no accounts")
}

fn unexpected() -> ErrorObjectOwned {
    error(code::INTERNAL, "the exec shard answered another question")
}

/// The handlers' shared context.
#[derive(Debug)]
pub struct Context {
    chain: ChainInfo,
    bridge: RpcBridge,
    limiter: RateLimiter,
}

impl Context {
    /// Asks the exec shard; "node busy" at once when its queue is full.
    async fn ask(&self, query: RpcQuery) -> RpcResult<RpcAnswer> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.bridge.to_exec.try_send(RpcRequest { query, reply }) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(_)) => {
                return Err(error(
                    code::LIMIT_EXCEEDED,
                    "node busy: the exec shard's query queue is full, retry later",
                ))
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                return Err(error(code::INTERNAL, "the exec shard is not running"))
            }
        }
        match tokio::time::timeout(EXEC_ANSWER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(error(code::INTERNAL, "the exec shard dropped the question")),
            Err(_) => Err(error(
                code::INTERNAL,
                "the exec shard did not answer in time (is it running?)",
            )),
        }
    }

    async fn head(&self) -> RpcResult<HeadInfo> {
        match self.ask(RpcQuery::Head).await? {
            RpcAnswer::Head(h) => Ok(h),
            _ => Err(unexpected()),
        }
    }

    async fn account(&self, address: Address, at: StateAt) -> RpcResult<AccountInfo> {
        match self
            .ask(RpcQuery::Account {
                address: address.into(),
                at,
            })
            .await?
        {
            RpcAnswer::Account(Ok(a)) => Ok(a),
            RpcAnswer::Account(Err(head)) => Err(server_error(format!(
                "historical state is not available: this node serves the latest state only \
                 (block {head})"
            ))),
            RpcAnswer::RawChain => Err(raw_chain_error()),
            _ => Err(unexpected()),
        }
    }

    /// The block asked for: block 0 from the genesis header, others from the index.
    async fn block(&self, at: BlockAt) -> RpcResult<Option<BlockRef>> {
        let genesis_hash = self.chain.genesis_header.hash();
        match at {
            BlockAt::Number(0) => return Ok(Some(BlockRef::Genesis)),
            BlockAt::Hash(h) if h == genesis_hash => return Ok(Some(BlockRef::Genesis)),
            _ => {}
        }
        match self.ask(RpcQuery::Block(at)).await? {
            RpcAnswer::Block(Some(b)) => Ok(Some(BlockRef::Indexed(b))),
            // The latest block is not indexed: at genesis, it is block 0.
            RpcAnswer::Block(None) if at == BlockAt::Latest => {
                Ok((self.head().await?.height == 0).then_some(BlockRef::Genesis))
            }
            RpcAnswer::Block(None) => Ok(None),
            _ => Err(unexpected()),
        }
    }

    async fn transaction(&self, hash: B256) -> RpcResult<TxFound> {
        match self.ask(RpcQuery::Transaction(hash.0)).await? {
            RpcAnswer::Transaction(t) => Ok(t),
            RpcAnswer::RawChain => Err(raw_chain_error()),
            _ => Err(unexpected()),
        }
    }
}

/// A block to answer with.
#[derive(Debug, Clone)]
enum BlockRef {
    /// Block 0.
    Genesis,
    /// A finalized block of the index.
    Indexed(Arc<IndexedBlock>),
}

/// Registers `handler` as `name` and `aliases`, behind the rate limit.
fn add<R, F, Fut>(
    module: &mut RpcModule<Context>,
    (name, aliases): (&'static str, &[&'static str]),
    handler: F,
) -> Result<(), String>
where
    R: Serialize + Clone + 'static,
    F: Fn(Params<'static>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = RpcResult<R>> + Send + 'static,
{
    module
        .register_async_method(name, move |params, ctx, _| {
            let handler = handler.clone();
            async move {
                if !ctx.limiter.try_take(Instant::now()) {
                    return Err(error(
                        code::LIMIT_EXCEEDED,
                        "request rate limit reached, retry later",
                    ));
                }
                handler(params, ctx).await
            }
        })
        .map_err(|e| e.to_string())?;
    for alias in aliases {
        module
            .register_alias(alias, name)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `eth_X`, with `kaia_X` and `klay_X` as aliases.
macro_rules! eth {
    ($m:literal) => {
        (
            concat!("eth_", $m),
            &[concat!("kaia_", $m), concat!("klay_", $m)][..],
        )
    };
}

/// A name without aliases.
macro_rules! only {
    ($m:literal) => {
        ($m, &[][..])
    };
}

/// The module of every method, for `config` and the exec shard behind `bridge`.
pub fn module(config: &RpcConfig, bridge: RpcBridge) -> Result<RpcModule<Context>, String> {
    let mut m = RpcModule::new(Context {
        chain: config.chain.clone(),
        bridge,
        limiter: RateLimiter::new(config.requests_per_second),
    });
    add(&mut m, eth!("chainId"), |_, ctx| async move {
        Ok(U64::from(ctx.chain.chain_id))
    })?;
    add(&mut m, only!("net_version"), |_, ctx| async move {
        Ok(ctx.chain.chain_id.to_string())
    })?;
    add(&mut m, only!("web3_clientVersion"), |_, _| async move {
        Ok(CLIENT_VERSION)
    })?;
    add(&mut m, eth!("blockNumber"), |_, ctx| async move {
        Ok(U64::from(ctx.head().await?.height))
    })?;
    add(&mut m, eth!("gasPrice"), |_, _| async move {
        Ok(U256::from(BASE_FEE_WEI))
    })?;
    add(&mut m, eth!("maxPriorityFeePerGas"), |_, _| async move {
        Ok(U256::ZERO)
    })?;
    add(&mut m, eth!("getBalance"), |params, ctx| async move {
        let mut seq = params.sequence();
        let address: Address = seq.next()?;
        let block: Option<BlockId> = seq.optional_next()?;
        let account = ctx.account(address, state_at(block)).await?;
        Ok(account.balance)
    })?;
    add(
        &mut m,
        eth!("getTransactionCount"),
        |params, ctx| async move {
            let mut seq = params.sequence();
            let address: Address = seq.next()?;
            let block: Option<BlockId> = seq.optional_next()?;
            let pending = matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending)));
            let account = ctx.account(address, state_at(block)).await?;
            Ok(U64::from(if pending {
                account.pending_nonce
            } else {
                account.nonce
            }))
        },
    )?;
    add(
        &mut m,
        eth!("sendRawTransaction"),
        |params, ctx| async move {
            let bytes: Bytes = params.one()?;
            if bytes.is_empty() {
                return Err(invalid_params("empty transaction"));
            }
            if bytes.len() > MAX_TX_BYTES {
                return Err(refusal_error(&Refusal::Oversized {
                    len: bytes.len(),
                    max: MAX_TX_BYTES,
                }));
            }
            match ctx.ask(RpcQuery::SendRaw(bytes.to_vec())).await? {
                RpcAnswer::Sent(Ok(hash)) => Ok(B256::from(hash)),
                RpcAnswer::Sent(Err(refusal)) => Err(refusal_error(&refusal)),
                RpcAnswer::RawChain => Err(raw_chain_error()),
                _ => Err(unexpected()),
            }
        },
    )?;
    add(
        &mut m,
        eth!("getTransactionByHash"),
        |params, ctx| async move {
            let hash: B256 = params.one()?;
            Ok(match ctx.transaction(hash).await? {
                TxFound::Included(block, index) => Some(included_transaction(&block, index)?),
                TxFound::Pending { bytes, sender } => Some(pending_transaction(&bytes, sender)?),
                TxFound::Unknown => None,
            })
        },
    )?;
    add(
        &mut m,
        eth!("getTransactionReceipt"),
        |params, ctx| async move {
            let hash: B256 = params.one()?;
            Ok(match ctx.transaction(hash).await? {
                TxFound::Included(block, index) => Some(receipt(&block, index)?),
                TxFound::Pending { .. } | TxFound::Unknown => None,
            })
        },
    )?;
    add(&mut m, eth!("getBlockByNumber"), |params, ctx| async move {
        let mut seq = params.sequence();
        let tag: BlockNumberOrTag = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        let block = ctx.block(block_at(tag)).await?;
        block
            .map(|b| eth_block(&ctx.chain, &b, full.unwrap_or(false)))
            .transpose()
    })?;
    add(&mut m, eth!("getBlockByHash"), |params, ctx| async move {
        let mut seq = params.sequence();
        let hash: B256 = seq.next()?;
        let full: Option<bool> = seq.optional_next()?;
        let block = ctx.block(BlockAt::Hash(hash.0)).await?;
        block
            .map(|b| eth_block(&ctx.chain, &b, full.unwrap_or(false)))
            .transpose()
    })?;
    add(&mut m, eth!("estimateGas"), |params, ctx| async move {
        let mut seq = params.sequence();
        let request: serde_json::Value = seq.next()?;
        let _block: Option<BlockId> = seq.optional_next()?;
        if ctx.chain.execution == ExecutionMode::Raw {
            return Err(raw_chain_error());
        }
        estimate_gas(&request).map(U64::from)
    })?;
    add(&mut m, eth!("feeHistory"), |params, ctx| async move {
        let mut seq = params.sequence();
        let count: serde_json::Value = seq.next()?;
        let newest: BlockNumberOrTag = seq.next()?;
        let percentiles: Option<Vec<f64>> = seq.optional_next()?;
        let count = parse_quantity(&count)?.min(MAX_FEE_HISTORY_BLOCKS);
        if let Some(p) = &percentiles {
            check_percentiles(p)?;
        }
        let newest = match newest {
            BlockNumberOrTag::Number(n) => Some(n),
            BlockNumberOrTag::Earliest => Some(0),
            _ => None,
        };
        let blocks = if count == 0 {
            Vec::new()
        } else {
            match ctx
                .ask(RpcQuery::Blocks {
                    newest,
                    count: count as usize,
                })
                .await?
            {
                RpcAnswer::Blocks(b) => b,
                _ => return Err(unexpected()),
            }
        };
        fee_history(&blocks, percentiles.as_deref())
    })?;
    add(&mut m, eth!("syncing"), |_, ctx| async move {
        let head = ctx.head().await?;
        let highest = ctx
            .bridge
            .highest_known
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok(sync_status(head, highest))
    })?;
    add(
        &mut m,
        only!("corecell_getBlockByNumber"),
        |params, ctx| async move {
            let tag: BlockNumberOrTag = params.one()?;
            let Some(block) = ctx.block(block_at(tag)).await? else {
                return Ok(None);
            };
            let header = block_header(&ctx.chain, &block);
            let parent_mix = match header.height {
                0 => None,
                1 => Some(ctx.chain.genesis_header.mix),
                h => ctx
                    .block(BlockAt::Number(h - 1))
                    .await?
                    .map(|parent| block_header(&ctx.chain, &parent).mix),
            };
            Ok(Some(consensus_block(&ctx.chain, &block, parent_mix)))
        },
    )?;
    add(
        &mut m,
        only!("corecell_getCertificate"),
        |params, ctx| async move {
            let tag: BlockNumberOrTag = params.one()?;
            Ok(match ctx.block(block_at(tag)).await? {
                Some(BlockRef::Indexed(b)) => Some(certificate_view(&b)),
                Some(BlockRef::Genesis) | None => None,
            })
        },
    )?;
    Ok(m)
}

/// The state a block parameter names (`None`: latest).
pub fn state_at(block: Option<BlockId>) -> StateAt {
    match block {
        None => StateAt::Latest,
        Some(BlockId::Hash(h)) => StateAt::Hash(h.block_hash.0),
        Some(BlockId::Number(tag)) => match tag {
            BlockNumberOrTag::Latest
            | BlockNumberOrTag::Pending
            | BlockNumberOrTag::Safe
            | BlockNumberOrTag::Finalized => StateAt::Latest,
            BlockNumberOrTag::Earliest => StateAt::Number(0),
            BlockNumberOrTag::Number(n) => StateAt::Number(n),
        },
    }
}

/// The block a block tag names (`pending`, `safe`, `finalized`: the newest final block).
pub fn block_at(tag: BlockNumberOrTag) -> BlockAt {
    match tag {
        BlockNumberOrTag::Latest
        | BlockNumberOrTag::Pending
        | BlockNumberOrTag::Safe
        | BlockNumberOrTag::Finalized => BlockAt::Latest,
        BlockNumberOrTag::Earliest => BlockAt::Number(0),
        BlockNumberOrTag::Number(n) => BlockAt::Number(n),
    }
}

/// A QUANTITY given as a number, a `0x` hex string or a decimal string.
pub fn parse_quantity(value: &serde_json::Value) -> RpcResult<u64> {
    let bad = || invalid_params(format!("expected a quantity, got {value}"));
    match value {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(bad),
        serde_json::Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) if !hex.is_empty() && hex.len() <= 16 => {
                u64::from_str_radix(hex, 16).map_err(|_| bad())
            }
            Some(_) => Err(bad()),
            None => s.parse::<u64>().map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

fn check_percentiles(p: &[f64]) -> RpcResult<()> {
    if p.len() > MAX_REWARD_PERCENTILES {
        return Err(invalid_params(format!(
            "at most {MAX_REWARD_PERCENTILES} reward percentiles"
        )));
    }
    for (i, &x) in p.iter().enumerate() {
        if !(0.0..=100.0).contains(&x) || (i > 0 && x < p[i - 1]) {
            return Err(invalid_params(
                "reward percentiles must be ascending, within 0..=100",
            ));
        }
    }
    Ok(())
}

/// `eth_estimateGas` for a transaction request: 21000 for a plain transfer.
pub fn estimate_gas(request: &serde_json::Value) -> RpcResult<u64> {
    let Some(object) = request.as_object() else {
        return Err(invalid_params("expected a transaction object"));
    };
    let to = object.get("to").filter(|v| !v.is_null());
    if to.is_none() {
        return Err(server_error(
            "contract creation not supported: this chain runs value transfers only",
        ));
    }
    for field in ["input", "data"] {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) if s == "0x" || s.is_empty() => {}
            Some(serde_json::Value::String(_)) => {
                return Err(server_error(
                    "contract calls not supported: this chain runs value transfers only",
                ))
            }
            Some(_) => return Err(invalid_params(format!("`{field}` must be hex data"))),
        }
    }
    Ok(TRANSFER_GAS)
}

fn sync_status(head: HeadInfo, highest_known: Height) -> SyncStatus {
    if highest_known > head.height {
        SyncStatus::Info(Box::new(SyncInfo {
            starting_block: U256::from(head.started_at),
            current_block: U256::from(head.height),
            highest_block: U256::from(highest_known),
            warp_chunks_amount: None,
            warp_chunks_processed: None,
            stages: None,
        }))
    } else {
        SyncStatus::None
    }
}

fn block_header<'a>(chain: &'a ChainInfo, block: &'a BlockRef) -> &'a BlockHeader {
    match block {
        BlockRef::Genesis => &chain.genesis_header,
        BlockRef::Indexed(b) => &b.finalized.block.header,
    }
}

fn proposer_address(chain: &ChainInfo, header: &BlockHeader) -> Address {
    if header.height == 0 {
        return Address::ZERO;
    }
    chain
        .council_node_ids
        .get(header.proposer as usize)
        .map_or(Address::ZERO, |id| Address::from(*id))
}

fn base_fee_u64() -> u64 {
    u64::try_from(BASE_FEE_WEI).unwrap_or(u64::MAX)
}

/// The Ethereum view of a block.
fn eth_block(chain: &ChainInfo, block: &BlockRef, full: bool) -> RpcResult<Block> {
    let header = block_header(chain, block);
    let hash = B256::from(header.hash());
    let (gas_used, transactions) = match block {
        BlockRef::Genesis => (0, BlockTransactions::Hashes(Vec::new())),
        BlockRef::Indexed(b) => {
            let txs = if full && chain.execution == ExecutionMode::Transfer {
                BlockTransactions::Full(
                    (0..b.tx_hashes.len() as u32)
                        .map(|i| included_transaction(b, i))
                        .collect::<RpcResult<Vec<_>>>()?,
                )
            } else {
                BlockTransactions::Hashes(b.tx_hashes.iter().map(|h| B256::from(*h)).collect())
            };
            (b.gas_used, txs)
        }
    };
    let transfer = chain.execution == ExecutionMode::Transfer;
    let inner = alloy_consensus::Header {
        parent_hash: header.parent_hash.into(),
        ommers_hash: alloy_consensus::constants::EMPTY_OMMER_ROOT_HASH,
        beneficiary: proposer_address(chain, header),
        state_root: header.state_root.into(),
        transactions_root: header.transactions_root.into(),
        receipts_root: B256::ZERO,
        logs_bloom: Bloom::ZERO,
        difficulty: U256::ZERO,
        number: header.height,
        gas_limit: if transfer { DEFAULT_BLOCK_GAS_LIMIT } else { 0 },
        gas_used,
        timestamp: header.timestamp_ms / 1000,
        extra_data: Bytes::new(),
        mix_hash: header.mix.into(),
        nonce: B64::ZERO,
        base_fee_per_gas: transfer.then(base_fee_u64),
        ..Default::default()
    };
    Ok(Block {
        header: RpcHeader {
            hash,
            inner,
            total_difficulty: Some(U256::ZERO),
            size: None,
        },
        uncles: Vec::new(),
        transactions,
        withdrawals: None,
    })
}

fn decode_envelope(bytes: &[u8]) -> RpcResult<TxEnvelope> {
    let mut input = bytes;
    TxEnvelope::decode_2718(&mut input).map_err(|e| {
        error(
            code::INTERNAL,
            format!("a stored transaction does not decode: {e}"),
        )
    })
}

fn included_transaction(block: &IndexedBlock, index: u32) -> RpcResult<RpcTransaction> {
    let i = index as usize;
    let (Some(tx), Some(sender)) = (
        block.finalized.block.transactions.get(i),
        block.senders.get(i),
    ) else {
        return Err(error(code::INTERNAL, "transaction index outside its block"));
    };
    let envelope = decode_envelope(&tx.bytes)?;
    let price = envelope.effective_gas_price(Some(base_fee_u64()));
    Ok(RpcTransaction {
        inner: Recovered::new_unchecked(envelope, Address::from(*sender)),
        block_hash: Some(B256::from(block.hash)),
        block_number: Some(block.height()),
        transaction_index: Some(u64::from(index)),
        effective_gas_price: Some(price),
        block_timestamp: Some(block.finalized.block.header.timestamp_ms / 1000),
    })
}

fn pending_transaction(bytes: &[u8], sender: [u8; 20]) -> RpcResult<RpcTransaction> {
    Ok(RpcTransaction {
        inner: Recovered::new_unchecked(decode_envelope(bytes)?, Address::from(sender)),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        effective_gas_price: None,
        block_timestamp: None,
    })
}

fn receipt(block: &IndexedBlock, index: u32) -> RpcResult<TransactionReceipt> {
    let i = index as usize;
    let (Some(tx), Some(sender), Some(r), Some(hash)) = (
        block.finalized.block.transactions.get(i),
        block.senders.get(i),
        block.receipts.get(i),
        block.tx_hashes.get(i),
    ) else {
        return Err(error(code::INTERNAL, "transaction index outside its block"));
    };
    let envelope = decode_envelope(&tx.bytes)?;
    let with_bloom = ReceiptWithBloom {
        receipt: EthReceipt::<Log> {
            status: Eip658Value::Eip658(r.status),
            cumulative_gas_used: r.cumulative_gas_used,
            logs: Vec::new(),
        },
        logs_bloom: Bloom::ZERO,
    };
    let inner = match envelope.ty() {
        0 => ReceiptEnvelope::Legacy(with_bloom),
        1 => ReceiptEnvelope::Eip2930(with_bloom),
        _ => ReceiptEnvelope::Eip1559(with_bloom),
    };
    Ok(TransactionReceipt {
        inner,
        transaction_hash: B256::from(*hash),
        transaction_index: Some(u64::from(index)),
        block_hash: Some(B256::from(block.hash)),
        block_number: Some(block.height()),
        gas_used: r.gas_used,
        effective_gas_price: envelope.effective_gas_price(Some(base_fee_u64())),
        blob_gas_used: None,
        blob_gas_price: None,
        from: Address::from(*sender),
        to: envelope.to(),
        contract_address: None,
    })
}

/// The effective priority fee per gas of each transaction of `block`, and its gas.
fn tips(block: &IndexedBlock) -> Vec<(u128, u64)> {
    block
        .finalized
        .block
        .transactions
        .iter()
        .zip(&block.receipts)
        .filter_map(|(tx, r)| {
            let envelope = decode_envelope(&tx.bytes).ok()?;
            let price = envelope.effective_gas_price(Some(base_fee_u64()));
            Some((price.saturating_sub(BASE_FEE_WEI), r.gas_used))
        })
        .collect()
}

/// geth's rule: sort by tip; the reward at percentile p is the tip of the transaction at
/// which the cumulative gas reaches p% of the block's gas.
fn rewards(mut tips: Vec<(u128, u64)>, percentiles: &[f64]) -> Vec<u128> {
    if tips.is_empty() {
        return vec![0; percentiles.len()];
    }
    tips.sort_unstable();
    let total: u64 = tips.iter().map(|t| t.1).sum();
    let mut out = Vec::with_capacity(percentiles.len());
    let mut at = 0;
    let mut cumulative = tips[0].1;
    for p in percentiles {
        let threshold = (total as f64) * p / 100.0;
        while (cumulative as f64) < threshold && at + 1 < tips.len() {
            at += 1;
            cumulative += tips[at].1;
        }
        out.push(tips[at].0);
    }
    out
}

fn fee_history(blocks: &[Arc<IndexedBlock>], percentiles: Option<&[f64]>) -> RpcResult<FeeHistory> {
    let oldest_block = blocks.first().map_or(0, |b| b.height());
    Ok(FeeHistory {
        base_fee_per_gas: vec![
            BASE_FEE_WEI;
            if blocks.is_empty() {
                0
            } else {
                blocks.len() + 1
            }
        ],
        gas_used_ratio: blocks
            .iter()
            .map(|b| b.gas_used as f64 / DEFAULT_BLOCK_GAS_LIMIT as f64)
            .collect(),
        base_fee_per_blob_gas: Vec::new(),
        blob_gas_used_ratio: Vec::new(),
        oldest_block,
        reward: percentiles.map(|p| blocks.iter().map(|b| rewards(tips(b), p)).collect()),
    })
}

/// `corecell_getBlockByNumber`: a block with its consensus facts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsensusBlock {
    /// Height.
    pub number: U64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Round of the proposal.
    pub round: u32,
    /// Proposal time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// The proposer's council index.
    pub proposer: u32,
    /// The proposer's node id.
    pub proposer_node_id: Option<Address>,
    /// The proposer's randao reveal (BLS signature).
    pub randao_reveal: Bytes,
    /// The mix after this block.
    pub mix: B256,
    /// Transactions root.
    pub transactions_root: B256,
    /// State root.
    pub state_root: B256,
    /// Digest of the committee of this height.
    pub committee_digest: B256,
    /// The committee, when derivable (parent's mix known) and matching `committeeDigest`.
    pub committee: Option<CommitteeView>,
    /// Transaction hashes.
    pub transactions: Vec<B256>,
    /// The commit certificate (none for block 0).
    pub certificate: Option<CertificateView>,
}

/// A committee.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitteeView {
    /// Council indices, in proposer order.
    pub members: Vec<u32>,
    /// Votes needed for a certificate.
    pub quorum: usize,
}

/// A commit certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateView {
    /// Certified height.
    pub height: U64,
    /// Round of the votes.
    pub round: u32,
    /// Certified block hash.
    pub block_hash: B256,
    /// Council indices of the signers.
    pub signers: Vec<u32>,
    /// The signers bitmap.
    pub signers_bitmap: Bytes,
    /// The aggregated BLS signature.
    pub signature: Bytes,
}

fn certificate_view(block: &IndexedBlock) -> CertificateView {
    let c = &block.finalized.certificate;
    CertificateView {
        height: U64::from(c.height),
        round: c.round,
        block_hash: B256::from(c.block_hash),
        signers: signers::iter(&c.signers).collect(),
        signers_bitmap: Bytes::copy_from_slice(&c.signers),
        signature: Bytes::copy_from_slice(&c.signature),
    }
}

/// The committee of `header`'s height from its parent's mix, if it matches the header.
pub fn committee_of(
    chain: &ChainInfo,
    header: &BlockHeader,
    parent_mix: &[u8; 32],
) -> Option<CommitteeView> {
    let council = chain.council_node_ids.len();
    if council == 0
        || council > crate::types::MAX_COUNCIL_SIZE
        || chain.committee_size == 0
        || header.height == 0
    {
        return None;
    }
    let committee = Committee::elect(council, chain.committee_size, header.height, parent_mix);
    (committee.digest() == header.committee_digest).then(|| CommitteeView {
        members: committee.members().to_vec(),
        quorum: committee.quorum(),
    })
}

fn consensus_block(
    chain: &ChainInfo,
    block: &BlockRef,
    parent_mix: Option<[u8; 32]>,
) -> ConsensusBlock {
    let header = block_header(chain, block);
    let (transactions, certificate) = match block {
        BlockRef::Genesis => (Vec::new(), None),
        BlockRef::Indexed(b) => (
            b.tx_hashes.iter().map(|h| B256::from(*h)).collect(),
            Some(certificate_view(b)),
        ),
    };
    ConsensusBlock {
        number: U64::from(header.height),
        hash: B256::from(header.hash()),
        parent_hash: header.parent_hash.into(),
        round: header.round,
        timestamp_ms: header.timestamp_ms,
        proposer: header.proposer,
        proposer_node_id: (header.height > 0)
            .then(|| chain.council_node_ids.get(header.proposer as usize))
            .flatten()
            .map(|id| Address::from(*id)),
        randao_reveal: Bytes::copy_from_slice(&header.randao_reveal),
        mix: header.mix.into(),
        transactions_root: header.transactions_root.into(),
        state_root: header.state_root.into(),
        committee_digest: header.committee_digest.into(),
        committee: parent_mix.and_then(|mix| committee_of(chain, header, &mix)),
        transactions,
        certificate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_answer_geths_messages_with_code_32000() {
        let cases = [
            (
                Refusal::NonceTooLow {
                    nonce: 0,
                    account_nonce: 1,
                },
                "nonce too low",
            ),
            (
                Refusal::InsufficientFunds {
                    balance: U256::ZERO,
                    cost: U256::from(1u8),
                },
                "insufficient funds for gas * price + value",
            ),
            (Refusal::AlreadyKnown, "already known"),
            (
                Refusal::ReplacementUnderpriced {
                    min_max_fee: 1,
                    min_tip: 1,
                },
                "replacement transaction underpriced",
            ),
            (
                Refusal::Underpriced { max_fee: 1, min: 2 },
                "transaction underpriced",
            ),
            (
                Refusal::IntrinsicGasTooLow {
                    gas_limit: 1,
                    min: 21_000,
                },
                "intrinsic gas too low",
            ),
            (
                Refusal::ExceedsBlockGasLimit {
                    gas_limit: 1,
                    max: 0,
                },
                "exceeds block gas limit",
            ),
            (Refusal::PoolFull, "txpool is full"),
            (Refusal::Oversized { len: 2, max: 1 }, "oversized data"),
            (
                Refusal::WrongChainId {
                    got: 1,
                    expected: 2,
                },
                "invalid chain id",
            ),
            (
                Refusal::Decode(crate::crypto::tx::TxError::HighS),
                "invalid sender",
            ),
        ];
        for (refusal, message) in cases {
            let e = refusal_error(&refusal);
            assert_eq!(e.code(), code::SERVER);
            assert_eq!(e.message(), message);
            let data = e.data().map(|d| d.get().to_string());
            let details = serde_json::to_string(&refusal.to_string()).ok();
            assert_eq!(data, details, "the details travel as data");
        }
    }

    #[test]
    fn quantities_parse_as_numbers_hex_or_decimal_and_nothing_else() {
        use serde_json::json;
        assert_eq!(parse_quantity(&json!(5)).ok(), Some(5));
        assert_eq!(parse_quantity(&json!("0x1f")).ok(), Some(31));
        assert_eq!(parse_quantity(&json!("12")).ok(), Some(12));
        for bad in [
            json!("0x"),
            json!("0xzz"),
            json!(-1),
            json!(1.5),
            json!(null),
            json!("0x11111111111111111"),
        ] {
            let e = parse_quantity(&bad).expect_err("refused");
            assert_eq!(e.code(), code::INVALID_PARAMS, "{bad}");
        }
    }

    #[test]
    fn block_tags_map_to_the_head_and_history_to_numbers() {
        for tag in ["latest", "pending", "safe", "finalized"] {
            let id: BlockId = serde_json::from_str(&format!("\"{tag}\"")).expect("tag");
            assert_eq!(state_at(Some(id)), StateAt::Latest, "{tag}");
        }
        let id: BlockId = serde_json::from_str("\"0x10\"").expect("number");
        assert_eq!(state_at(Some(id)), StateAt::Number(16));
        let id: BlockId = serde_json::from_str("\"earliest\"").expect("earliest");
        assert_eq!(state_at(Some(id)), StateAt::Number(0));
        assert_eq!(state_at(None), StateAt::Latest);
        assert_eq!(block_at(BlockNumberOrTag::Pending), BlockAt::Latest);
        assert_eq!(block_at(BlockNumberOrTag::Number(3)), BlockAt::Number(3));
    }

    #[test]
    fn estimate_gas_is_21000_for_a_transfer_and_an_error_for_calls_and_creations() {
        use serde_json::json;
        let to = "0x0000000000000000000000000000000000000001";
        assert_eq!(
            estimate_gas(&json!({"to": to, "value": "0x1"})).ok(),
            Some(21_000)
        );
        assert_eq!(
            estimate_gas(&json!({"to": to, "input": "0x"})).ok(),
            Some(21_000)
        );
        let e = estimate_gas(&json!({"to": to, "data": "0xabcd"})).expect_err("call");
        assert!(e.message().contains("contract calls"));
        let e = estimate_gas(&json!({"value": "0x1"})).expect_err("creation");
        assert!(e.message().contains("contract creation"));
        let e = estimate_gas(&json!([1])).expect_err("not an object");
        assert_eq!(e.code(), code::INVALID_PARAMS);
    }

    #[test]
    fn rewards_follow_the_gas_weighted_percentile_rule() {
        let tips = vec![(30, 21_000), (10, 21_000), (20, 21_000), (40, 21_000)];
        assert_eq!(
            rewards(tips, &[0.0, 25.0, 50.0, 100.0]),
            vec![10, 10, 20, 40]
        );
        assert_eq!(rewards(Vec::new(), &[50.0]), vec![0]);
        assert!(check_percentiles(&[10.0, 5.0]).is_err());
        assert!(check_percentiles(&[101.0]).is_err());
        assert!(check_percentiles(&[0.0, 50.0, 100.0]).is_ok());
    }

    #[test]
    fn syncing_reports_progress_only_while_behind() {
        let head = HeadInfo {
            height: 10,
            oldest_indexed: Some(1),
            started_at: 2,
        };
        assert!(matches!(sync_status(head, 10), SyncStatus::None));
        assert!(matches!(sync_status(head, 0), SyncStatus::None));
        match sync_status(head, 15) {
            SyncStatus::Info(info) => {
                assert_eq!(info.current_block, U256::from(10u8));
                assert_eq!(info.highest_block, U256::from(15u8));
                assert_eq!(info.starting_block, U256::from(2u8));
            }
            SyncStatus::None => panic!("behind, so syncing"),
        }
    }
}
